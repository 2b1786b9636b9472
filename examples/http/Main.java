// Stores, reads and deletes a key over gerdu's HTTP API with java.net.http.
// Usage: java examples/http/Main.java http://127.0.0.1:8080
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class Main {
    public static void main(String[] args) throws Exception {
        String base = args.length > 0 ? args[0] : "http://127.0.0.1:8080";
        URI uri = URI.create(base + "/cache/Hello");
        HttpClient client = HttpClient.newHttpClient();
        HttpResponse.BodyHandler<String> text = HttpResponse.BodyHandlers.ofString();
        HttpResponse<String> r = client.send(
            HttpRequest.newBuilder(uri).PUT(HttpRequest.BodyPublishers.ofString("World")).build(), text);
        System.out.println("PUT /cache/Hello -> " + r.statusCode());
        r = client.send(HttpRequest.newBuilder(uri).GET().build(), text);
        System.out.println("GET /cache/Hello -> " + r.statusCode() + " " + r.body());
        r = client.send(HttpRequest.newBuilder(uri).DELETE().build(), text);
        System.out.println("DELETE /cache/Hello -> " + r.statusCode());
        r = client.send(HttpRequest.newBuilder(uri).GET().build(), text);
        System.out.println("GET /cache/Hello -> " + r.statusCode());
    }
}

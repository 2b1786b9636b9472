<?php
// Stores, reads and deletes a key over gerdu's HTTP API with PHP's streams.
// Usage: php examples/http/php.php http://127.0.0.1:8080
$url = ($argv[1] ?? 'http://127.0.0.1:8080') . '/cache/Hello';

function call(string $method, string $url, string $body = ''): array {
    $ctx = stream_context_create(['http' => [
        'method' => $method, 'content' => $body, 'ignore_errors' => true,
        'header' => "Content-Type: application/octet-stream\r\n",
    ]]);
    $data = file_get_contents($url, false, $ctx);
    preg_match('{HTTP/\S+ (\d+)}', $http_response_header[0], $m);
    return [(int) $m[1], $data];
}

[$status] = call('PUT', $url, 'World');
echo "PUT /cache/Hello -> $status\n";
[$status, $value] = call('GET', $url);
echo "GET /cache/Hello -> $status $value\n";
[$status] = call('DELETE', $url);
echo "DELETE /cache/Hello -> $status\n";
[$status] = call('GET', $url);
echo "GET /cache/Hello -> $status\n";

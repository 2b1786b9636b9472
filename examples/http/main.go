// Stores, reads and deletes a key over gerdu's HTTP API with net/http.
// Usage: go run examples/http/main.go http://127.0.0.1:8080
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

func call(method, url, body string) (int, string) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		panic(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

func main() {
	base := "http://127.0.0.1:8080"
	if len(os.Args) > 1 {
		base = os.Args[1]
	}
	url := base + "/cache/Hello"
	status, _ := call("PUT", url, "World")
	fmt.Printf("PUT /cache/Hello -> %d\n", status)
	status, value := call("GET", url, "")
	fmt.Printf("GET /cache/Hello -> %d %s\n", status, value)
	status, _ = call("DELETE", url, "")
	fmt.Printf("DELETE /cache/Hello -> %d\n", status)
	status, _ = call("GET", url, "")
	fmt.Printf("GET /cache/Hello -> %d\n", status)
}

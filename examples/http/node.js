// Stores, reads and deletes a key over gerdu's HTTP API with Node's fetch.
// Usage: node examples/http/node.js http://127.0.0.1:8080
const base = process.argv[2] || "http://127.0.0.1:8080";

async function main() {
  let r = await fetch(`${base}/cache/Hello`, { method: "PUT", body: "World" });
  console.log(`PUT /cache/Hello -> ${r.status}`);
  r = await fetch(`${base}/cache/Hello`);
  console.log(`GET /cache/Hello -> ${r.status} ${await r.text()}`);
  r = await fetch(`${base}/cache/Hello`, { method: "DELETE" });
  console.log(`DELETE /cache/Hello -> ${r.status}`);
  r = await fetch(`${base}/cache/Hello`);
  console.log(`GET /cache/Hello -> ${r.status}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

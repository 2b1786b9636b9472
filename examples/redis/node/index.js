// Stores, reads and deletes a key over the Redis protocol with node-redis.
// Usage: (cd examples/redis/node && npm install) && node examples/redis/node/index.js 6379
const { createClient } = require("redis");

async function main() {
  const port = Number(process.argv[2] || 6379);
  const client = createClient({ socket: { host: "127.0.0.1", port } });
  client.on("error", (e) => {
    console.error(e);
    process.exit(1);
  });
  await client.connect();
  console.log(`SET Hello -> ${await client.set("Hello", "World")}`);
  console.log(`GET Hello -> ${await client.get("Hello")}`);
  console.log(`DEL Hello -> ${await client.del("Hello")}`);
  console.log(`GET Hello -> ${(await client.get("Hello")) ?? "(nil)"}`);
  await client.quit();
}

main();

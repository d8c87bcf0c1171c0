// The official TypeScript SDK's client against `micro mcp`: lists the tools, reads their
// schemas, calls a tool (the SDK checks structuredContent against the outputSchema), gets an
// error result, then waits for notifications/tools/list_changed after the test starts another
// service (it prints WAITING_FOR_CHANGE when ready for it) and lists the new tools.
//   node sdk_client.mjs stdio <micro> <registry flag>
//   node sdk_client.mjs http <url>
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";

const [mode, ...rest] = process.argv.slice(2);
const failures = [];
function check(condition, message) {
  if (!condition) {
    failures.push(message);
    console.log("FAIL: " + message);
  }
}

const transport =
  mode === "stdio"
    ? new StdioClientTransport({ command: rest[0], args: [rest[1], "mcp"], stderr: "inherit" })
    : new StreamableHTTPClientTransport(new URL(rest[0]));
const client = new Client({ name: "sdk-test", version: "1.0.0" });
let changed = 0;
client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
  changed += 1;
});
await client.connect(transport);
check(client.getServerVersion()?.name === "micro-mcp", "server name " + JSON.stringify(client.getServerVersion()));
check(client.getServerCapabilities()?.tools?.listChanged === true, "tools.listChanged capability");

const { tools } = await client.listTools();
const names = tools.map((tool) => tool.name);
check(JSON.stringify(names) === JSON.stringify(["catalog.Catalog.Echo", "catalog.Catalog.Fail",
  "catalog.Catalog.Search", "catalog.Catalog.Slow", "catalog.Catalog.Stats",
  "greeter.Greeter.Hello"]), "tool names " + names);
const search = tools.find((tool) => tool.name === "catalog.Catalog.Search");
check(search?.inputSchema?.properties?.filter?.properties?.in_stock?.type === "boolean",
  "nested input schema " + JSON.stringify(search?.inputSchema));
check(search?.outputSchema?.properties?.items?.type === "array", "output schema");

const hello = await client.callTool({ name: "greeter.Greeter.Hello", arguments: { name: "Sdk" } });
check(hello.isError === false && hello.structuredContent?.greeting === "Hello, Sdk!",
  "greeter call " + JSON.stringify(hello));
const found = await client.callTool({ name: "catalog.Catalog.Search",
  arguments: { query: "pen", limit: 1, filter: { tags: [], in_stock: false } } });
check(found.structuredContent?.items?.[0]?.id === "pen-0", "search call " + JSON.stringify(found));
const failed = await client.callTool({ name: "catalog.Catalog.Fail", arguments: { reason: "sdk" } });
check(failed.isError === true && failed.content[0].text.includes("refused: sdk"),
  "error result " + JSON.stringify(failed));
let protocolError = null;
try {
  await client.callTool({ name: "no.Such.Tool", arguments: {} });
} catch (error) {
  protocolError = error;
}
check(protocolError !== null && String(protocolError).includes("unknown tool"),
  "unknown tool is a protocol error: " + protocolError);

console.log("WAITING_FOR_CHANGE");
const deadline = Date.now() + 25000;
while (changed === 0 && Date.now() < deadline) {
  // Over HTTP the notification rides on the next answer's SSE stream.
  if (mode === "http") await client.ping();
  await new Promise((resolve) => setTimeout(resolve, 250));
}
check(changed > 0, "notifications/tools/list_changed after a second service registered");
const after = (await client.listTools()).tools.map((tool) => tool.name);
check(after.includes("second.Catalog.Echo"), "new service's tools " + after);

await client.close();
console.log(failures.length === 0 ? "SDK CHECKS PASSED" : failures.length + " SDK failure(s)");
process.exit(failures.length === 0 ? 0 : 1);

// Usage: node eval.js PACFILE < cases.json
// Evaluates the PAC file in a fresh context with the helpers of
// helpers.js and prints, as JSON, FindProxyForURL(url, host) for every
// case [url, host] read from stdin, and the number of DNS lookups made.
"use strict";
const fs = require("fs");
const path = require("path");
const vm = require("vm");

const ctx = vm.createContext({});
vm.runInContext(fs.readFileSync(path.join(__dirname, "helpers.js"), "utf8"), ctx, { filename: "helpers.js" });
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), ctx, { filename: "proxy.pac" });
ctx.dnsTable = { "intranet-by-ip.example": "10.1.2.3", "public.example": "203.0.113.5" };

const cases = JSON.parse(fs.readFileSync(0, "utf8"));
const results = cases.map(([url, host]) => {
  ctx.url = url;
  ctx.host = host;
  return String(vm.runInContext("FindProxyForURL(url, host)", ctx));
});
process.stdout.write(JSON.stringify({ results, dnsLookups: ctx.dnsLookups }));

// The standard PAC helper functions (Netscape's proxy auto-config spec, as
// browsers implement them), for evaluating a generated PAC file in Node
// without any DNS: dnsResolve reads the fixed table `dnsTable`, and every
// lookup is counted in `dnsLookups` so a test can assert none happened.
var dnsTable = {};
var dnsLookups = 0;

function dnsResolve(host) {
  dnsLookups++;
  return Object.prototype.hasOwnProperty.call(dnsTable, host) ? dnsTable[host] : null;
}

function isResolvable(host) {
  return dnsResolve(host) !== null;
}

function myIpAddress() {
  return "192.0.2.10";
}

function isPlainHostName(host) {
  return host.indexOf(".") < 0;
}

function dnsDomainIs(host, domain) {
  host = String(host).toLowerCase();
  domain = String(domain).toLowerCase();
  return host.length >= domain.length && host.substring(host.length - domain.length) == domain;
}

function localHostOrDomainIs(host, hostdom) {
  return host == hostdom || hostdom.lastIndexOf(host + ".", 0) == 0;
}

function dnsDomainLevels(host) {
  return host.split(".").length - 1;
}

function convertAddr(ip) {
  var p = ip.split(".");
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

// isInNet resolves host when it is not an IPv4 literal, as browsers do.
function isInNet(host, pattern, mask) {
  var ip = /^\d+\.\d+\.\d+\.\d+$/.test(host) ? host : dnsResolve(host);
  if (ip === null || !/^\d+\.\d+\.\d+\.\d+$/.test(ip)) {
    return false;
  }
  var m = convertAddr(mask);
  return ((convertAddr(ip) & m) >>> 0) == ((convertAddr(pattern) & m) >>> 0);
}

function shExpMatch(str, shexp) {
  var re = shexp.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp("^" + re + "$").test(str);
}

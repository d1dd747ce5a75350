// The peer of bench/compare.py: Medplum's FHIR engine (@medplum/fhir-router's FhirRouter over
// its MemoryRepository) behind node:http, answering the REST paths the bench drives under
// /fhir: read, create, update (PUT with If-Match), and batch/transaction Bundles at the base.
//
//   node bench/peer/server.mjs --port 8090 [--host 127.0.0.1]
//
// What it skips compared with calaim-fhir, by construction: no validation (the router does not
// validate; Medplum's server validates in its Repository, which this is not), no durability
// (resources live in a JavaScript Map: no disk, no fsync), no authentication, access policy,
// consent or audit, no search index, no outbox. One process, one event loop.
//
// HTTP answers as Medplum's server gives them: the status from the OperationOutcome, the
// resource as JSON (application/fhir+json), ETag W/"<versionId>", Location on 201, and the
// X-Request-Id of the request echoed (bench/update.lua matches answers to requests by it).
import http from 'node:http';
import { getStatus, isOk } from '@medplum/core';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = option('host', '127.0.0.1');
const port = Number(option('port', '8090'));
const prefix = '/fhir';
const router = new FhirRouter();
const repo = new MemoryRepository();
const config = { transactions: true };

function send(res, status, body, headers) {
  const data = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/fhir+json; charset=utf-8',
    'Content-Length': Buffer.byteLength(data),
    ...headers,
  });
  res.end(data);
}

async function handle(req, res, raw) {
  const headers = {};
  const requestId = req.headers['x-request-id'];
  if (requestId) headers['X-Request-Id'] = requestId;
  const url = new URL(req.url, `http://${req.headers.host || host}`);
  if (!url.pathname.startsWith(prefix)) {
    send(res, 404, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] }, headers);
    return;
  }
  const path = url.pathname.slice(prefix.length).replace(/^\/+/, '');
  let body;
  if (raw.length > 0) {
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      send(res, 400, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid', diagnostics: 'invalid JSON' }] }, headers);
      return;
    }
  }
  const query = Object.fromEntries(url.searchParams.entries());
  const [outcome, resource] = await router.handleRequest(
    { method: req.method, url: path + url.search, pathname: '', body, params: {}, query, headers: req.headers, config },
    repo
  );
  const status = getStatus(outcome);
  if (resource?.meta?.versionId) headers.ETag = `W/"${resource.meta.versionId}"`;
  if (status === 201 && resource?.id) {
    headers.Location = `${prefix}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId}`;
  }
  send(res, status, isOk(outcome) && resource ? resource : (resource ?? outcome), headers);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    handle(req, res, Buffer.concat(chunks)).catch((err) => {
      send(res, 500, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', diagnostics: String(err) }] });
    });
  });
});
server.keepAliveTimeout = 65_000;
server.listen(port, host, () => {
  console.error(`peer: Medplum FhirRouter + MemoryRepository on http://${host}:${port}${prefix}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}

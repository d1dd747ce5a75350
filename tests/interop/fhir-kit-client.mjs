// fhir-kit-client against a real server: `node fhir-kit-client.mjs BASE_URL`.
// Runs every operation of the interoperability scenario the way fhir-kit-client does it and
// prints one JSON object, {operation: "ok" | what went wrong}, for test_fhir_kit_client.py.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import Client from 'fhir-kit-client';

const [base] = process.argv.slice(2);
const AS_OF = '2024-08-31';
const PAGE_SIZE = 3;
const PAGED = 7;
const SYSTEM = 'urn:interop:fhir-kit-client';
const client = new Client({ baseUrl: base });
const made = {};
const results = {};

const status = (resource) => Client.httpFor(resource).response.status;
const patient = (system, value) => ({
  resourceType: 'Patient',
  identifier: [{ system, value }],
});

async function refusedWith(code, promise) {
  try {
    await promise;
  } catch (error) {
    assert.equal(error.response?.status, code, String(error));
    assert.equal(error.response.data.resourceType, 'OperationOutcome');
    return;
  }
  assert.fail(`expected HTTP ${code}`);
}

function memberTransaction(member) {
  const bundle = JSON.parse(readFileSync(new URL('./member-transaction.json', import.meta.url)));
  for (const entry of bundle.entry) {
    if (entry.resource.resourceType === 'Patient') entry.resource.identifier[0].value = member;
  }
  return bundle;
}

function createdId(response, type) {
  assert.equal(response.type, 'transaction-response');
  for (const entry of response.entry) {
    assert.match(entry.response.status, /^20[01]/);
    if (entry.response.location.startsWith(`${type}/`)) return entry.response.location.split('/')[1];
  }
  assert.fail(`no ${type} in the transaction-response`);
}

const steps = {
  async create() {
    const created = await client.create({ resourceType: 'Patient', body: patient(SYSTEM, 'one') });
    assert.equal(status(created), 201);
    assert.equal(created.meta.versionId, '1');
    made.id = created.id;
  },
  async read() {
    const got = await client.read({ resourceType: 'Patient', id: made.id });
    assert.equal(got.identifier[0].value, 'one');
    made.patient = got;
  },
  async 'conditional-create'() {
    const options = { headers: { 'If-None-Exist': `identifier=${SYSTEM}|cond` } };
    const body = patient(SYSTEM, 'cond');
    const first = await client.create({ resourceType: 'Patient', body, options });
    const again = await client.create({ resourceType: 'Patient', body, options });
    assert.deepEqual([status(first), status(again)], [201, 200]);
    assert.equal(again.id, first.id);
    const found = await client.search({
      resourceType: 'Patient',
      searchParams: { identifier: `${SYSTEM}|cond` },
    });
    assert.deepEqual(found.entry.map((e) => e.resource.id), [first.id]);
  },
  async 'update-with-version'() {
    const body = { ...made.patient, active: true };
    const updated = await client.update({
      resourceType: 'Patient',
      id: made.id,
      body,
      options: { headers: { 'If-Match': `W/"${made.patient.meta.versionId}"` } },
    });
    assert.equal(updated.meta.versionId, '2');
    assert.equal(Client.httpFor(updated).response.headers.get('etag'), 'W/"2"');
  },
  async 'stale-version-refused'() {
    const body = { ...made.patient, active: false };
    await refusedWith(412, client.update({
      resourceType: 'Patient',
      id: made.id,
      body,
      options: { headers: { 'If-Match': 'W/"1"' } },
    }));
    assert.equal((await client.read({ resourceType: 'Patient', id: made.id })).active, true);
  },
  async patch() {
    const patched = await client.patch({
      resourceType: 'Patient',
      id: made.id,
      JSONPatch: [
        { op: 'add', path: '/gender', value: 'other' },
        { op: 'replace', path: '/active', value: false },
      ],
      options: { headers: { 'If-Match': 'W/"2"' } },
    });
    assert.deepEqual([patched.gender, patched.active, patched.meta.versionId], ['other', false, '3']);
    await refusedWith(422, client.patch({
      resourceType: 'Patient',
      id: made.id,
      JSONPatch: [{ op: 'replace', path: '/birthDate', value: 'yesterday' }],
    }));
  },
  async 'search-paging'() {
    for (let n = 0; n < PAGED; n += 1) {
      await client.create({ resourceType: 'Patient', body: patient(`${SYSTEM}:page`, String(n)) });
    }
    let bundle = await client.search({
      resourceType: 'Patient',
      searchParams: { identifier: `${SYSTEM}:page|`, _count: PAGE_SIZE },
    });
    const sizes = [];
    const values = [];
    while (bundle) {
      sizes.push((bundle.entry ?? []).length);
      for (const entry of bundle.entry ?? []) values.push(entry.resource.identifier[0].value);
      bundle = await client.nextPage({ bundle });
    }
    assert.deepEqual(sizes, [3, 3, 1]);
    assert.deepEqual(values.sort(), Array.from({ length: PAGED }, (_, n) => String(n)));
  },
  async transaction() {
    const response = await client.transaction({ body: memberTransaction('fhir-kit-client') });
    made.member = createdId(response, 'Patient');
  },
  async 'ecm-eligibility'() {
    for (const method of ['GET', 'POST']) {
      const input = method === 'GET'
        ? { asOf: AS_OF }
        : { resourceType: 'Parameters', parameter: [{ name: 'asOf', valueDate: AS_OF }] };
      const answer = await client.operation({
        name: '$ecm-eligibility', resourceType: 'Patient', id: made.member, method, input,
      });
      assert.equal(answer.resourceType, 'Parameters');
      const values = Object.fromEntries(answer.parameter.map((p) => [p.name, p]));
      assert.equal(values.eligible.valueBoolean, true);
      assert.equal(values.determination.valueCode, 'eligible');
      assert.equal(values.asOf.valueDate, AS_OF);
    }
  },
  async delete() {
    await client.delete({ resourceType: 'Patient', id: made.id });
    await refusedWith(410, client.read({ resourceType: 'Patient', id: made.id }));
  },
};

for (const [operation, step] of Object.entries(steps)) {
  try {
    await step();
    results[operation] = 'ok';
  } catch (error) {
    results[operation] = String(error?.stack ?? error).slice(0, 600);
  }
}
process.stdout.write(`${JSON.stringify(results)}\n`);

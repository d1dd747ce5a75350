-- wrk -s bench/update.lua: PUT /fhir/ServiceRequest/{id} with If-Match.
--
-- $BENCH_IDS lists the resources to update (seed at least as many as connections).
-- A resource is used by one request at a time (a free-list): a request takes a free
-- resource, sends X-Request-Id: u<index>-<seq>, and the response (the server echoes
-- X-Request-Id) gives the resource back with its new version from the ETag header.
-- Versions start from $BENCH_VERSION (default 1), or from a line's second field ("<id> <version>":
-- servers whose version ids are not counters). On 412 the resource is re-read (GET) and its
-- version taken from that response's ETag before the next PUT. $BENCH_TOKEN: a bearer token.
-- counters: updated (2xx PUT), precondition_failed (412), rereads, other_status.
local dir = os.getenv("BENCH_DIR") or "bench"
dofile(dir .. "/common.lua")

local template = bench_read_file(os.getenv("BENCH_BODY") or (dir .. "/data/servicerequest.json"))
local ids, versions, stale, free = {}, {}, {}, {}
local head, tail = 1, 0
local seq = 0
bench_counts = { updated = 0, precondition_failed = 0, rereads = 0, other_status = 0, unmatched = 0 }

local function push(i) tail = tail + 1; free[tail] = i end
local function pop()
  if head > tail then return nil end
  local i = free[head]; free[head] = nil; head = head + 1
  return i
end

function init(args)
  local lines = bench_read_lines(assert(os.getenv("BENCH_IDS"), "set BENCH_IDS"))
  local v0 = os.getenv("BENCH_VERSION") or "1"
  local first = {}
  for i, line in ipairs(lines) do
    local id, v = string.match(line, "^(%S+)%s+(%S+)")
    ids[i] = id or line
    first[i] = v or v0
  end
  -- with several wrk threads, each thread takes its own slice of the ids
  local n = tonumber(os.getenv("BENCH_THREADS") or "1")
  local me = thread_id or 1
  for i = 1, #ids do
    if (i - 1) % n == me - 1 then versions[i] = first[i]; push(i) end
  end
end

-- the body for resource i: the fixture with "id" set and the note text varied
local bodies = {}
local function body_for(i)
  local b = bodies[i]
  if not b then
    b = string.gsub(template, '^%s*{', '{"id":"' .. ids[i] .. '",', 1)
    bodies[i] = b
  end
  return b
end

function request()
  local i = pop()
  if i == nil then
    -- cannot happen while #ids >= connections; fall back to a harmless read
    i = 1
  end
  seq = seq + 1
  local rid = "u" .. i .. "-" .. seq
  if stale[i] then
    bench_counts.rereads = bench_counts.rereads + 1
    return wrk.format("GET", "/fhir/ServiceRequest/" .. ids[i],
      bench_auth({ ["Accept"] = "application/fhir+json", ["X-Request-Id"] = rid }))
  end
  return wrk.format("PUT", "/fhir/ServiceRequest/" .. ids[i], bench_auth({
    ["Content-Type"] = "application/fhir+json",
    ["Accept"] = "application/fhir+json",
    ["If-Match"] = 'W/"' .. versions[i] .. '"',
    ["X-Request-Id"] = rid,
  }), body_for(i))
end

function response(status, headers, body)
  local rid = bench_header(headers, "X-Request-Id")
  local i = rid and tonumber(string.match(rid, "^u(%d+)%-"))
  if i == nil then
    bench_counts.unmatched = bench_counts.unmatched + 1
    return
  end
  local etag = bench_header(headers, "ETag")
  local v = etag and string.match(etag, '"([^"]+)"')
  if stale[i] then
    if status == 200 and v then versions[i] = v; stale[i] = nil end
  elseif status >= 200 and status < 300 then
    bench_counts.updated = bench_counts.updated + 1
    if v then versions[i] = v end
  elseif status == 412 then
    bench_counts.precondition_failed = bench_counts.precondition_failed + 1
    stale[i] = true
  else
    bench_counts.other_status = bench_counts.other_status + 1
    stale[i] = true
  end
  push(i)
end

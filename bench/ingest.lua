-- wrk -s bench/ingest.lua: POST transaction Bundles to the base /fhir, one after the other from
-- $BENCH_BUNDLES (one Bundle a line, e.g. bench/bundle_gen.py --shape feed output joined), each
-- connection taking the next one. $BENCH_TOKEN: sent as a bearer token. The resources/s figure
-- is 2xx answers × entries per Bundle ÷ seconds (bench/compare.py).
--   BENCH_DIR=bench BENCH_BUNDLES=feed.ndjson wrk -t1 -c4 -d10s --timeout 30s --latency \
--     -s bench/ingest.lua http://127.0.0.1:8080
local dir = os.getenv("BENCH_DIR") or "bench"
dofile(dir .. "/common.lua")

local reqs = {}
local next_one = 0

function init(args)
  local headers = bench_auth({
    ["Content-Type"] = "application/fhir+json",
    ["Accept"] = "application/fhir+json",
  })
  for i, body in ipairs(bench_read_lines(assert(os.getenv("BENCH_BUNDLES"), "set BENCH_BUNDLES"))) do
    reqs[i] = wrk.format("POST", "/fhir", headers, body)
  end
  next_one = (thread_id or 0) * 7
end

function request()
  next_one = next_one % #reqs + 1
  return reqs[next_one]
end

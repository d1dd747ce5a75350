-- wrk -s bench/search/post.lua: POST the resource in $BENCH_BODY to /fhir/$BENCH_TYPE
-- (a create with search indexing). Uses bench/common.lua for the BENCH_JSON summary line.
--   BENCH_DIR=bench BENCH_TYPE=Task BENCH_BODY=task.json \
--     wrk -t1 -c16 -d10s --latency -s bench/search/post.lua http://127.0.0.1:PORT
local dir = os.getenv("BENCH_DIR") or "bench"
dofile(dir .. "/common.lua")

local body = bench_read_file(assert(os.getenv("BENCH_BODY"), "set BENCH_BODY"))
local type = os.getenv("BENCH_TYPE") or "Task"
local req

function init(args)
  req = wrk.format("POST", "/fhir/" .. type, {
    ["Content-Type"] = "application/fhir+json",
    ["Accept"] = "application/fhir+json",
  }, body)
end

function request()
  return req
end

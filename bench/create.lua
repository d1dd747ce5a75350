-- wrk -s bench/create.lua: POST the ServiceRequest in $BENCH_BODY to /fhir/ServiceRequest
-- ($BENCH_TOKEN: sent as a bearer token).
--   BENCH_DIR=bench BENCH_BODY=bench/data/servicerequest.json \
--     wrk -t1 -c16 -d10s --latency -s bench/create.lua http://127.0.0.1:PORT
local dir = os.getenv("BENCH_DIR") or "bench"
dofile(dir .. "/common.lua")

local body = bench_read_file(os.getenv("BENCH_BODY") or (dir .. "/data/servicerequest.json"))
local req

function init(args)
  req = wrk.format("POST", "/fhir/ServiceRequest", bench_auth({
    ["Content-Type"] = "application/fhir+json",
    ["Accept"] = "application/fhir+json",
  }), body)
end

function request()
  return req
end

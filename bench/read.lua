-- wrk -s bench/read.lua: GET /fhir/ServiceRequest/{id}, id picked at random from the
-- lines of $BENCH_IDS (or the single id $BENCH_ID). BENCH_MODE=search: the search
-- /fhir/ServiceRequest?_id={id}&status=active instead; BENCH_TOKEN: sent as a bearer token.
--   BENCH_DIR=bench BENCH_IDS=ids.txt wrk -t1 -c16 -d10s --latency -s bench/read.lua URL
local dir = os.getenv("BENCH_DIR") or "bench"
dofile(dir .. "/common.lua")

local reqs = {}

function init(args)
  local ids
  if os.getenv("BENCH_ID") and os.getenv("BENCH_ID") ~= "" then
    ids = { os.getenv("BENCH_ID") }
  else
    ids = bench_read_lines(assert(os.getenv("BENCH_IDS"), "set BENCH_IDS or BENCH_ID"))
  end
  local headers = bench_auth({ ["Accept"] = "application/fhir+json" })
  local search = os.getenv("BENCH_MODE") == "search"
  for i, id in ipairs(ids) do
    local path = "/fhir/ServiceRequest/" .. id
    if search then
      path = "/fhir/ServiceRequest?_id=" .. id .. "&status=active"
    end
    reqs[i] = wrk.format("GET", path, headers)
  end
  math.randomseed(os.time() + (thread_id or 0))
end

function request()
  return reqs[math.random(#reqs)]
end

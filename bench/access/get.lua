-- wrk -s bench/access/get.lua: GET a path picked at random from the lines of $BENCH_PATHS,
-- with the bearer token $BENCH_TOKEN when set.
--   BENCH_DIR=bench BENCH_PATHS=paths.txt wrk -t1 -c16 -d5s --latency -s bench/access/get.lua URL
local dir = os.getenv("BENCH_DIR") or "bench"
dofile(dir .. "/common.lua")

local reqs = {}

function init(args)
  local paths = bench_read_lines(assert(os.getenv("BENCH_PATHS"), "set BENCH_PATHS"))
  local headers = { ["Accept"] = "application/fhir+json" }
  local token = os.getenv("BENCH_TOKEN")
  if token and token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
  for i, path in ipairs(paths) do
    reqs[i] = wrk.format("GET", path, headers)
  end
  math.randomseed(os.time() + (thread_id or 0))
end

function request()
  return reqs[math.random(#reqs)]
end

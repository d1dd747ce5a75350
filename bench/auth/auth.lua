-- wrk -s bench/auth/auth.lua: GET /fhir/ServiceRequest/{id} (BENCH_MODE=read) or a search
-- /fhir/ServiceRequest?_id={id}&status=active (BENCH_MODE=search), id at random from the
-- lines of $BENCH_IDS, with "Authorization: Bearer $BENCH_TOKEN" when BENCH_TOKEN is set.
local dir = os.getenv("BENCH_DIR") or "bench"
dofile(dir .. "/common.lua")

local reqs = {}

function init(args)
  local ids = bench_read_lines(assert(os.getenv("BENCH_IDS"), "set BENCH_IDS"))
  local headers = { ["Accept"] = "application/fhir+json" }
  local token = os.getenv("BENCH_TOKEN")
  if token and token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
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

-- Shared by the bench/*.lua wrk scripts: the done() summary as one JSON line.
--   BENCH_JSON {"requests":..,"duration_us":..,"errors":{..},"latency_us":{"p50":..},"counters":{..}}
-- Scripts may define bench_counters() (returning a table of numbers) in each thread;
-- done() sums them over the threads.

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

local function json_value(v)
  if type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return string.format("%.3f", v)
  end
  if type(v) == "table" then
    local parts = {}
    for k, x in pairs(v) do
      table.insert(parts, string.format("%q:%s", tostring(k), json_value(x)))
    end
    table.sort(parts)
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return string.format("%q", tostring(v))
end

function done(summary, latency, requests)
  local counters = {}
  for _, t in ipairs(threads) do
    local c = t:get("bench_counts")
    if type(c) == "table" then
      for k, v in pairs(c) do counters[k] = (counters[k] or 0) + v end
    end
  end
  local out = {
    requests = summary.requests,
    duration_us = summary.duration,
    bytes = summary.bytes,
    errors = summary.errors,
    latency_us = {
      min = latency.min, max = latency.max, mean = latency.mean, stdev = latency.stdev,
      p50 = latency:percentile(50), p90 = latency:percentile(90),
      p95 = latency:percentile(95), p99 = latency:percentile(99),
    },
    counters = counters,
  }
  io.write("BENCH_JSON " .. json_value(out) .. "\n")
end

function bench_read_file(path)
  local f = assert(io.open(path, "rb"), "cannot open " .. tostring(path))
  local data = f:read("*a")
  f:close()
  return data
end

function bench_read_lines(path)
  local lines = {}
  for line in io.lines(path) do
    if line ~= "" then table.insert(lines, line) end
  end
  return lines
end

function bench_header(headers, name)
  return headers[name] or headers[string.lower(name)]
end

-- the Authorization header when $BENCH_TOKEN names a bearer token (added to headers in place)
function bench_auth(headers)
  local token = os.getenv("BENCH_TOKEN")
  if token and token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
  return headers
end

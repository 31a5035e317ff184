-- wrk script for benchmarks/api.py: payments through Payment-EAPI.
--
-- Credentials come from the environment, never from the command line (where `ps` would
-- show them):
--   BENCH_MODE        post-headers (default) | post-bearer | get-bearer
--   BENCH_CLIENT_ID   BENCH_CLIENT_SECRET    for post-headers (the seed's two headers)
--   BENCH_TOKEN                              for post-bearer / get-bearer
--   BENCH_REF_PREFIX  prefix of the unique payment reference (one per run)
--
-- POST modes send the seed's body with a unique reference per request
-- ("<prefix>-<thread>-<n>"), so every request inserts a new row. get-bearer GETs the URL
-- given to wrk (an existing payment).
--
-- done() prints one machine-readable line, "BENCH_JSON {...}", with exact counts and
-- latency percentiles in microseconds; benchmarks/api.py reads it (and the --latency text).

local mode = os.getenv("BENCH_MODE") or "post-headers"
local prefix = os.getenv("BENCH_REF_PREFIX") or "BENCH"
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  wrk.headers["Content-Type"] = "application/json"
  if mode == "post-headers" then
    wrk.method = "POST"
    wrk.headers["X-Client-ID"] = os.getenv("BENCH_CLIENT_ID")
    wrk.headers["X-Client-Secret"] = os.getenv("BENCH_CLIENT_SECRET")
  elseif mode == "post-bearer" then
    wrk.method = "POST"
    wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
  elseif mode == "get-bearer" then
    wrk.method = "GET"
    wrk.headers["Content-Type"] = nil
    wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
  else
    error("unknown BENCH_MODE " .. mode)
  end
end

function request()
  if mode == "get-bearer" then
    return wrk.format()
  end
  counter = counter + 1
  local body = string.format(
    '{"amount": 100.00, "currency": "USD", "reference": "%s-%d-%d"}', prefix, tid, counter
  )
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean
  ))
end

-- wrk script for bench/heartbeat_ingest.py (one wrk thread).
--
--   wrk ... -s heartbeat_ingest.lua <url> -- heartbeat <requests file>
--   wrk ... -s heartbeat_ingest.lua <url> -- healthz
--
-- "heartbeat": the file holds one member per line, "<secret><TAB><JSON body>"; every request is
-- the next member's heartbeat, so N members each send one heartbeat per N requests.
-- "healthz": GET /healthz through the same request() hook, so both runs cost wrk the same.
-- Requests are formatted once in init(): request() only hands out a prepared string.
-- done() prints one line, "FIGURES {json}", which the benchmark reads.

local prepared = {}
local count = 0
local index = 0

function init(args)
  if args[1] == "heartbeat" then
    for line in io.lines(args[2]) do
      local secret, body = line:match("^([^\t]+)\t(.*)$")
      count = count + 1
      prepared[count] = wrk.format("POST", "/api/agents/heartbeat", {
        ["Authorization"] = "Bearer " .. secret,
        ["Content-Type"] = "application/json",
      }, body)
    end
  else
    count = 1
    prepared[1] = wrk.format("GET", "/healthz")
  end
end

function request()
  index = index % count + 1
  return prepared[index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'FIGURES {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max
  ))
end

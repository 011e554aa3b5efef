-- Replays the pre-built raw HTTP requests of the file BENCH_REQUESTS (records of
-- "<length>\n<bytes>", written by bench/traffic.py), in order, from record
-- BENCH_START, wrapping at the end. Prints one "BENCH_RESULT {json}" line when done.
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

requests = {}
count = 0
index = 0
sent = 0

function init(args)
  local path = os.getenv("BENCH_REQUESTS")
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  local pos = 1
  while pos <= #data do
    local newline = data:find("\n", pos, true)
    local length = tonumber(data:sub(pos, newline - 1))
    count = count + 1
    requests[count] = data:sub(newline + 1, newline + length)
    pos = newline + length + 1
  end
  assert(count > 0, "no requests in " .. path)
  -- Threads start a stride apart, so they do not send the same records at once.
  local stride = math.floor(count / tonumber(os.getenv("BENCH_THREADS") or "1"))
  index = (tonumber(os.getenv("BENCH_START") or "0") + tid * stride) % count
end

function request()
  index = index % count + 1
  sent = sent + 1
  return requests[index]
end

function done(summary, latency, _)
  local sent_total, wrapped = 0, 0
  for _, thread in ipairs(threads) do
    local n = thread:get("sent")
    sent_total = sent_total + n
    if n > thread:get("count") then wrapped = 1 end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"sent":%d,"wrapped":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, sent_total, wrapped,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end

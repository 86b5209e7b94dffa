-- One step of the tutorial workload for wrk, described by a Lua data file that bench/tutorial.py
-- writes (bench/workload.py): the requests to cycle through, and for token rotation the tokens.
--
--   wrk -t2 -c32 -d10s --latency -s bench/lua/tutorial.lua URL -- SPEC_FILE THREADS NONCE
--
-- Each wrk thread takes every THREADS-th request (and token) of the spec and sends them round
-- robin. Placeholders, replaced per request:
--   {n}   a value unique to this request across threads and runs (NONCE-thread-counter)
--   {rt}  a token taken from this thread's queue; with `capture` set, the token the answer
--         carries (a Lua pattern's first capture) goes back in the queue, so a rotated refresh
--         token is never sent twice.
-- Requests without placeholders are rendered once. done() prints the answers by status and one
-- sample body per error status, which bench/tutorial.py reads.

local threads = {}
local created = 0

function setup(thread)
  thread:set("id", created)
  created = created + 1
  table.insert(threads, thread)
end

local function slurp(path)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  return data
end

local requests = {}
local queue, head, tail = {}, 1, 0
local capture = nil
local counter = 0
local cursor = 0
local last_token = ""
statuses = {}
samples = {}

local function templated(r)
  if r.path:find("{", 1, true) or r.body:find("{n}", 1, true) or r.body:find("{rt}", 1, true) then
    return true
  end
  for _, value in pairs(r.headers) do
    if value:find("{", 1, true) then return true end
  end
  return false
end

function init(args)
  local spec = dofile(args[1])
  local nthreads = tonumber(args[2])
  nonce = args[3]
  capture = spec.capture
  local blobs = {}
  for i, path in ipairs(spec.blobs or {}) do blobs[i] = slurp(path) end
  local mine = {}
  for i, r in ipairs(spec.requests) do
    if #spec.requests < nthreads or (i - 1) % nthreads == id then table.insert(mine, r) end
  end
  for _, r in ipairs(mine) do
    local parts = {}
    for _, part in ipairs(r.body or {}) do
      if type(part) == "number" then table.insert(parts, blobs[part]) else table.insert(parts, part) end
    end
    local request = {method = r.method, path = r.path, headers = r.headers, body = table.concat(parts)}
    if not templated(request) then
      request.raw = wrk.format(request.method, request.path, request.headers,
                               #request.body > 0 and request.body or nil)
    end
    table.insert(requests, request)
  end
  local tokens = spec.tokens or {}
  for i, token in ipairs(tokens) do
    if #tokens < nthreads or (i - 1) % nthreads == id then
      tail = tail + 1
      queue[tail] = token
    end
  end
  if not spec.want_response then response = nil end
end

local function fill(text, n, token)
  text = text:gsub("{n}", n)
  if token then text = text:gsub("{rt}", token) end
  return text
end

function request()
  cursor = cursor % #requests + 1
  local r = requests[cursor]
  if r.raw then return r.raw end
  counter = counter + 1
  local n = nonce .. "-" .. id .. "-" .. counter
  local token = nil
  if r.body:find("{rt}", 1, true) or r.path:find("{rt}", 1, true) or capture then
    if head <= tail then
      token = queue[head]
      queue[head] = nil
      head = head + 1
    else
      token = last_token -- the queue ran dry (answers lost): this request will fail and count
    end
    last_token = token
  end
  local headers = {}
  for name, value in pairs(r.headers) do headers[name] = fill(value, n, token) end
  local body = fill(r.body, n, token)
  return wrk.format(r.method, fill(r.path, n, token), headers, #body > 0 and body or nil)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status >= 400 and not samples[status] then samples[status] = body:sub(1, 400) end
  if capture and status < 300 then
    local token = body:match(capture)
    if token then
      tail = tail + 1
      queue[tail] = token
    end
  end
end

function done(summary, latency, requests)
  local total, sample = {}, {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses") or {}) do total[status] = (total[status] or 0) + count end
    for status, body in pairs(thread:get("samples") or {}) do sample[status] = body end
  end
  for status, count in pairs(total) do io.write(string.format("STATUS %d %d\n", status, count)) end
  for status, body in pairs(sample) do
    io.write(string.format("SAMPLE %d %s\n", status, (body:gsub("[\r\n]", " "))))
  end
end

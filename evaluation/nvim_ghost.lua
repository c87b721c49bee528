-- Times ghost text in a headless Neovim that runs the shipped editors/neovim/diffill.lua,
-- for evaluation/bench_neovim.py (issue 25 item 5). The plugin is installed as a user
-- installs it (init.lua calls require("diffill").setup); this file only acts and watches.
--
-- Job: the JSON file named by $DIFFILL_NVIM_JOB:
--   warmup {path, places}, files [{path, places}], each place {line (0-based), kind, move_ms}
--   ("eol": `A` at the end of the line; "newline": `o`, a new line below it);
--   timeout_ms (per place), warmup_timeout_ms, ready_timeout_ms, settle_ms, one_buffer, out.
-- Steps (a coroutine: every wait yields to Neovim's own loop, which runs insert mode, the
-- LSP client and vim.lsp.inline_completion as for a person):
--   1. :edit the warm-up file, wait for the core to be ready, one place, settle, wipe it;
--   2. per file: :edit it; at each place put the cursor on the line and press the key;
--      wait until an extmark of Neovim's inline-completion namespace is on the cursor's
--      row (polled every 10 ms, and checked right after every inline answer is handled);
--      <Esc>, undo an opened line, wait move_ms, the next place;
--   3. write every timestamp and every inline request to `out`, quit.
-- Times are milliseconds on Neovim's clock (vim.uv.hrtime()) since this file started.

local job = vim.json.decode(table.concat(vim.fn.readfile(vim.env.DIFFILL_NVIM_JOB), "\n"))
local api = vim.api
local T0 = vim.uv.hrtime()
local NS = api.nvim_create_namespace("nvim.lsp.inline_completion") -- the id Neovim's module uses

local function ms()
  return (vim.uv.hrtime() - T0) / 1e6
end

local out = { nvim = tostring(vim.version()), inline = vim.lsp.inline_completion ~= nil, files = {},
  requests = {}, messages = {}, insert_enter = {} }

local function finish(err)
  out.error = err
  out.end_ms = ms()
  vim.fn.writefile({ vim.json.encode(out) }, job.out)
  vim.cmd(err and "cquit 1" or "qall!")
end

-- The row being watched for ghost text: {buf, row, t_ghost, text}.
local watch = nil

local function ghost_text(buf, row)
  local marks = api.nvim_buf_get_extmarks(buf, NS, { row, 0 }, { row, -1 }, { details = true })
  if #marks == 0 then
    return nil
  end
  local d, parts = marks[1][4], {}
  for _, chunk in ipairs(d.virt_text or {}) do
    table.insert(parts, chunk[1])
  end
  for _, line in ipairs(d.virt_lines or {}) do
    local s = {}
    for _, chunk in ipairs(line) do
      table.insert(s, chunk[1])
    end
    table.insert(parts, "\n" .. table.concat(s))
  end
  return table.concat(parts)
end

local function check_watch()
  if watch and not watch.t_ghost and api.nvim_buf_is_valid(watch.buf) then
    local text = ghost_text(watch.buf, watch.row)
    if text then
      watch.t_ghost, watch.text = ms(), text
    end
  end
end

-- Every inline request the client sends (for which buffer, when) and its answer.
local attached = {} -- bufnr -> ms of diffill's LspAttach
api.nvim_create_autocmd("LspAttach", {
  callback = function(args)
    local client = vim.lsp.get_client_by_id(args.data.client_id)
    if not client or client.name ~= "diffill" then
      return
    end
    attached[args.buf] = attached[args.buf] or ms()
    if client._diffill_bench then
      return
    end
    client._diffill_bench = true
    local request = client.request
    client.request = function(self, method, params, handler, bufnr)
      if method == "textDocument/inlineCompletion" and handler then
        local rec = { uri = params.textDocument.uri, line = params.position.line, character = params.position.character,
          focused = params.textDocument.uri == vim.uri_from_bufnr(api.nvim_get_current_buf()), sent_ms = ms() }
        table.insert(out.requests, rec)
        local inner = handler
        handler = function(err, result, ctx, ...)
          rec.answered_ms = ms()
          if err then
            rec.error = err.message or tostring(err.code)
          end
          local items = type(result) == "table" and (result.items or result) or {}
          rec.items = #items
          local ret = { inner(err, result, ctx, ...) }
          check_watch() -- the handler draws the extmark synchronously: time it here
          return unpack(ret)
        end
      end
      return request(self, method, params, handler, bufnr)
    end
  end,
})
api.nvim_create_autocmd("InsertEnter", { callback = function()
  table.insert(out.insert_enter, ms())
end })
local show_message = vim.lsp.handlers["window/showMessage"]
vim.lsp.handlers["window/showMessage"] = function(err, params, ctx, ...)
  table.insert(out.messages, { ms = ms(), type = params.type, message = params.message })
  return show_message(err, params, ctx, ...)
end

local co
local function resume()
  local ok, err = coroutine.resume(co)
  if not ok then
    finish("driver: " .. tostring(err) .. "\n" .. debug.traceback(co))
  end
end

local function sleep(n)
  vim.defer_fn(resume, math.max(0, math.floor(n)))
  coroutine.yield()
end

-- `pred()`'s first true value, polled every `poll` ms; nil after `timeout` ms.
local function wait_for(pred, timeout, poll)
  local deadline = ms() + timeout
  while true do
    local v = pred()
    if v then
      return v
    end
    if ms() >= deadline then
      return nil
    end
    sleep(poll or 10)
  end
end

local function diffill()
  return vim.lsp.get_clients({ name = "diffill" })[1]
end

local function status(buf)
  local c = diffill()
  if not c then
    return nil
  end
  local done, reply = false, nil
  c:request("diffill/status", {}, function(_, result)
    reply, done = result, true
  end, buf)
  wait_for(function()
    return done
  end, 10000, 20)
  return reply
end

local function wait_ready()
  local deadline = ms() + job.ready_timeout_ms
  while ms() < deadline do
    local c = diffill()
    local st = c and c.initialized and status(0)
    if st and st.core then
      if st.core.state == "ready" then
        return st
      elseif st.core.state == "failed" then
        error("core failed: " .. vim.inspect(st.core))
      end
    end
    sleep(200)
  end
  error("the core was not ready within " .. job.ready_timeout_ms .. " ms")
end

-- :edit path; (buffer, ms of the :edit) once diffill has attached to it.
local function open(path)
  local t = ms()
  vim.cmd.edit(vim.fn.fnameescape(path))
  local buf = api.nvim_get_current_buf()
  if not wait_for(function()
    return attached[buf]
  end, 60000, 5) then
    error("diffill did not attach to " .. path)
  end
  return buf, t
end

-- The cursor goes to the place, the key enters insert mode; ghost text on its row, or none
-- within `timeout`; then <Esc> (Neovim aborts the inline completion) and the line restored.
local function do_place(buf, place, timeout)
  local row = place.kind == "newline" and place.line + 1 or place.line
  local line_count = api.nvim_buf_line_count(buf)
  api.nvim_win_set_cursor(0, { place.line + 1, 0 })
  watch = { buf = buf, row = row }
  local rec = { line = place.line, kind = place.kind, row = row, key_ms = ms() }
  api.nvim_feedkeys(place.kind == "newline" and "o" or "A", "n", false)
  wait_for(function()
    check_watch()
    return watch.t_ghost
  end, timeout, 10)
  rec.ghost_ms, rec.text, watch = watch.t_ghost, watch.text, nil
  rec.cursor = api.nvim_win_get_cursor(0)
  if rec.ghost_ms then
    local st = status(buf)
    local uri = vim.uri_from_bufnr(buf)
    for _, d in ipairs(st and st.documents or {}) do
      if d.uri == uri then
        rec.document = d
      end
    end
  end
  api.nvim_feedkeys(vim.keycode("<Esc>"), "n", false)
  wait_for(function()
    return api.nvim_get_mode().mode == "n"
  end, 5000, 5)
  rec.leave_ms = ms()
  if api.nvim_buf_line_count(buf) ~= line_count then
    vim.cmd("silent undo")
  end
  rec.restored = api.nvim_buf_line_count(buf) == line_count
  return rec
end

co = coroutine.create(function()
  local wbuf, t_warm = open(job.warmup.path)
  out.attach_first_ms = attached[wbuf] - t_warm
  wait_ready()
  out.core_ready_ms = ms()
  out.warmup = do_place(wbuf, job.warmup.places[1], job.warmup_timeout_ms)
  out.warmup.open_ms = t_warm
  sleep(job.settle_ms) -- the standby core the server starts after its first fill comes up
  vim.cmd("bwipeout! " .. wbuf)
  for _, f in ipairs(job.files) do
    sleep(f.places[1].move_ms)
    local buf, t_open = open(f.path)
    local frec = { path = f.path, open_ms = t_open, attach_ms = attached[buf], places = {} }
    table.insert(out.files, frec)
    for i, place in ipairs(f.places) do
      if i > 1 then
        sleep(place.move_ms)
      end
      table.insert(frec.places, do_place(buf, place, job.timeout_ms))
    end
    if job.one_buffer then
      vim.cmd("bwipeout! " .. buf)
    end
  end
  out.clients = #vim.lsp.get_clients({ name = "diffill" })
  out.status = status(0)
  finish(nil)
end)
resume()

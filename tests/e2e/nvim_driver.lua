-- Drives a headless Neovim through editors/neovim/diffill.lua for tests/e2e/test_neovim.py.
--
-- Reads its job from the JSON file named by $DIFFILL_NVIM_JOB:
--   plugin_dir, file, cmd, settings, inline (true: ghost text, false: completion menu),
--   line/col of the completion (0-based, col in bytes), out (result file).
-- Steps, each when the previous one has finished (timers, so Neovim's own event
-- loop runs insert mode, the LSP client and the plugin's mappings as for a person):
--   1. open the file, wait for diffill to attach and its core to be ready;
--   2. enter insert mode at the cursor; ghost text: wait for the server's inline
--      answer, press <Tab>; menu: wait for the completion item, accept it with <C-y>;
--   3. leave insert mode, run :DiffillFillHoles, wait for the edit to be applied;
--   4. write what the server answered and what the buffer became to `out`, quit.
-- Any failure or timeout writes {"error": ...} and quits with status 1.

local job = vim.json.decode(table.concat(vim.fn.readfile(vim.env.DIFFILL_NVIM_JOB), "\n"))
local out = { answers = {}, applied = {}, steps = {} }
local STEP_TIMEOUT_MS = 60000

local function finish(err)
  out.error = err
  vim.fn.writefile({ vim.json.encode(out) }, job.out)
  vim.cmd(err and "cquit 1" or "qall!")
end

local function lines()
  return vim.api.nvim_buf_get_lines(0, 0, -1, false)
end

-- Polls `ready` every 50 ms, then runs `next_step`; fails the run after the timeout.
local function when(name, ready, next_step)
  local deadline = vim.uv.now() + STEP_TIMEOUT_MS
  local function poll()
    local ok, done = pcall(ready)
    if not ok then
      return finish(name .. ": " .. tostring(done))
    end
    if done then
      table.insert(out.steps, name)
      local ok2, err = pcall(next_step)
      if not ok2 then
        finish(name .. ": " .. tostring(err))
      end
    elseif vim.uv.now() > deadline then
      finish("timed out waiting for: " .. name)
    else
      vim.defer_fn(poll, 50)
    end
  end
  vim.defer_fn(poll, 0)
end

local function diffill_client()
  return vim.lsp.get_clients({ bufnr = 0, name = "diffill" })[1]
end

-- Record what the server answers, then hand it on unchanged.
vim.api.nvim_create_autocmd("LspAttach", {
  callback = function(args)
    local client = vim.lsp.get_client_by_id(args.data.client_id)
    if not client or client.name ~= "diffill" or client._diffill_test then
      return
    end
    client._diffill_test = true
    local request = client.request
    client.request = function(self, method, params, handler, bufnr)
      if (method == "textDocument/inlineCompletion" or method == "textDocument/completion") and handler then
        local inner = handler
        handler = function(err, result, ctx, ...)
          if result ~= nil then
            table.insert(out.answers, { method = method, result = result })
          end
          return inner(err, result, ctx, ...)
        end
      end
      return request(self, method, params, handler, bufnr)
    end
  end,
})
out.messages = {}
local show_message = vim.lsp.handlers["window/showMessage"]
vim.lsp.handlers["window/showMessage"] = function(err, params, ctx, ...)
  table.insert(out.messages, params)
  return show_message(err, params, ctx, ...)
end
local apply_edit = vim.lsp.handlers["workspace/applyEdit"]
vim.lsp.handlers["workspace/applyEdit"] = function(err, params, ctx, ...)
  out.lines_before_fill = lines()
  table.insert(out.applied, params)
  return apply_edit(err, params, ctx, ...)
end

package.path = job.plugin_dir .. "/?.lua;" .. package.path
require("diffill").setup({ cmd = job.cmd, settings = job.settings, inline = job.inline })
vim.cmd.edit(vim.fn.fnameescape(job.file))
out.nvim = tostring(vim.version())

local function status()
  local client = diffill_client()
  local res = client and client:request_sync("diffill/status", {}, 5000, 0)
  return res and res.result
end

local last_answer = function()
  return out.answers[#out.answers]
end

local function answer_items(a)
  local items = a.result.items or a.result
  return items
end

-- After either accept path: record the buffer, leave insert mode, fill the holes.
local function after_accept()
  out.lines_after_accept = lines()
  vim.api.nvim_feedkeys(vim.keycode("<Esc>"), "n", false)
  step_fill_holes()
end

local function step_accept_ghost_text()
  local items_seen
  when("ghost text shown", function()
    local a = last_answer()
    if not (a and #answer_items(a) > 0) then
      return false
    end
    items_seen = answer_items(a)
    local ns = vim.api.nvim_get_namespaces()["nvim.lsp.inline_completion"]
    return ns and #vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, {}) > 0
  end, function()
    out.lines_before_accept = lines()
    out.item = items_seen[1]
    vim.api.nvim_feedkeys(vim.keycode("<Tab>"), "m", false) -- the plugin's mapping
    when("accepted", function()
      return not vim.deep_equal(lines(), out.lines_before_accept)
    end, after_accept)
  end)
end

local function step_accept_menu_item()
  when("completion menu shown", function()
    local info = vim.fn.complete_info({ "items" })
    return #info.items > 0
  end, function()
    -- Neovim's default 'completeopt' already shows the selected item in the line;
    -- <C-y> accepts it and closes the menu.
    out.item = vim.fn.complete_info({ "items" }).items[1].user_data.nvim.lsp.completion_item
    vim.api.nvim_feedkeys(vim.keycode("<C-y>"), "n", false)
    when("accepted", function()
      return vim.fn.mode() == "i" and #vim.fn.complete_info({ "items" }).items == 0
    end, after_accept)
  end)
end

function step_fill_holes()
  when("normal mode", function()
    return vim.fn.mode() == "n"
  end, function()
    vim.cmd("DiffillFillHoles")
    when("holes filled", function()
      return #out.applied > 0 and not vim.deep_equal(lines(), out.lines_before_fill)
    end, function()
      out.lines_after_fill = lines()
      out.status = status()
      finish(nil)
    end)
  end)
end

when("core ready", function()
  local st = diffill_client() and diffill_client().initialized and status()
  if st and st.core.state == "failed" then
    error("core failed: " .. vim.inspect(st.core))
  end
  return st and st.core.state == "ready"
end, function()
  vim.api.nvim_win_set_cursor(0, { job.line + 1, job.col })
  vim.api.nvim_feedkeys("a", "n", false) -- insert after the cursor's character
  if job.inline then
    step_accept_ghost_text()
  else
    -- the menu opens on a trigger character: type the space after `return`
    vim.api.nvim_feedkeys(" ", "n", false)
    step_accept_menu_item()
  end
end)

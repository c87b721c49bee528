-- diffill for Neovim: inline (ghost-text) completion on 0.12+, the completion-menu
-- fallback on older versions.
--
-- Put this file on your runtimepath (e.g. ~/.config/nvim/lua/diffill.lua) and call
--   require("diffill").setup({ --[[ settings, see docs/lsp.md ]] })
-- `diffill` must be on $PATH (pip install -e . in the diffill checkout).

local M = {}

local defaults = {
  cmd = { "diffill", "lsp" },
  filetypes = { "python", "javascript", "typescript", "typescriptreact", "go", "rust", "c", "cpp", "java" },
  -- Sent as initializationOptions and answered to workspace/configuration ("diffill").
  settings = {
    model = { path = "", device = "auto" },
    fill = { maxTokens = 64 },
    completion = { enable = true },
  },
  -- Key that accepts the ghost text (0.12+).
  accept_key = "<Tab>",
  -- Ghost text (true) or the completion menu (false); nil: ghost text where Neovim
  -- has it (0.12+), the menu on 0.11.
  inline = nil,
}

-- Neovim's completion menu inserts only the first word of a plain-text item (its
-- "word" is newText up to the first space): on accept, put the whole fill over the
-- item's range. The word went in at the cursor of the request.
local function complete_whole_fill(client)
  return function()
    local done = vim.v.completed_item
    local lsp_data = type(done) == "table" and type(done.user_data) == "table" and done.user_data.nvim
      and done.user_data.nvim.lsp
    if not lsp_data or lsp_data.client_id ~= client.id then
      return
    end
    local edit = lsp_data.completion_item and lsp_data.completion_item.textEdit
    local word = done.word or ""
    if not edit or edit.newText == word then
      return
    end
    local rng = edit.range or edit.replace
    local row, col = unpack(vim.api.nvim_win_get_cursor(0))
    local line = vim.api.nvim_get_current_line()
    local asked = col - #word
    if rng.start.line ~= row - 1 or rng["end"].line ~= row - 1 or line:sub(asked + 1, col) ~= word then
      return -- cancelled, or not the line the item was made for
    end
    local before = line:sub(1, asked) .. line:sub(col + 1) -- the line the server saw
    local enc = client.offset_encoding
    local first = vim.str_byteindex(before, enc, rng.start.character, false)
    local last = vim.str_byteindex(before, enc, rng["end"].character, false)
    if first > asked or last < asked then
      return
    end
    local lines = vim.split(edit.newText, "\n")
    vim.api.nvim_buf_set_text(0, row - 1, first, row - 1, col + (last - asked), lines)
    vim.api.nvim_win_set_cursor(0, { row + #lines - 1, (#lines == 1 and first or 0) + #lines[#lines] })
  end
end

function M.setup(opts)
  opts = vim.tbl_deep_extend("force", defaults, opts or {})
  local has_inline = vim.lsp.inline_completion ~= nil -- Neovim 0.12+
  if opts.inline ~= nil then
    has_inline = opts.inline and has_inline
  end

  -- Older Neovim has no inline completion: let the completion menu carry the fill.
  opts.settings.completion.enable = opts.settings.completion.enable or not has_inline

  vim.lsp.config("diffill", {
    cmd = opts.cmd,
    filetypes = opts.filetypes,
    root_markers = { ".git", "pyproject.toml", "package.json", "go.mod", "Cargo.toml" },
    init_options = opts.settings,
    settings = { diffill = opts.settings },
    capabilities = {
      general = { positionEncodings = { "utf-8", "utf-16", "utf-32" } },
    },
  })
  vim.lsp.enable("diffill")

  vim.api.nvim_create_autocmd("LspAttach", {
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if not client or client.name ~= "diffill" then
        return
      end
      if has_inline then
        vim.lsp.inline_completion.enable(true, { bufnr = args.buf })
        vim.keymap.set("i", opts.accept_key, function()
          if not vim.lsp.inline_completion.get() then
            return opts.accept_key
          end
        end, { buffer = args.buf, expr = true, replace_keycodes = true, desc = "diffill: accept" })
      else
        -- 0.11: built-in completion with autotrigger shows diffill's one item.
        if vim.lsp.completion and vim.lsp.completion.enable then
          vim.lsp.completion.enable(true, client.id, args.buf, { autotrigger = true })
          vim.api.nvim_create_autocmd("CompleteDone", { buffer = args.buf, callback = complete_whole_fill(client) })
        end
      end
      -- Fill every hole of the buffer jointly (<|fill|>, pass, todo!(), ...).
      vim.api.nvim_buf_create_user_command(args.buf, "DiffillFillHoles", function()
        client:exec_cmd({ title = "Fill all holes", command = "diffill.fillHoles", arguments = { vim.uri_from_bufnr(args.buf) } },
          { bufnr = args.buf })
      end, { desc = "diffill: fill all holes" })
      vim.api.nvim_buf_create_user_command(args.buf, "DiffillStatus", function()
        client:request("diffill/status", {}, function(err, result)
          vim.notify(err and vim.inspect(err) or vim.inspect(result))
        end, args.buf)
      end, { desc = "diffill: status" })
    end,
  })
end

return M

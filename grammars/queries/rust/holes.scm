; Placeholders in Rust: todo!() and unimplemented!(), with their `;` when they are a
; statement (the outer capture wins over the inner one).

((expression_statement (macro_invocation macro: (identifier) @_mac)) @hole
 (#any-of? @_mac "todo" "unimplemented"))

((macro_invocation macro: (identifier) @_mac) @hole
 (#any-of? @_mac "todo" "unimplemented"))

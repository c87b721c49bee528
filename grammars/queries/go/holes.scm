; Placeholders in Go: panic("TODO") / panic("not implemented").

((call_expression
   function: (identifier) @_fn
   arguments: (argument_list . (interpreted_string_literal) @_msg .)) @hole
 (#eq? @_fn "panic")
 (#match? @_msg "(?i)todo|not (yet )?implemented|unimplemented"))

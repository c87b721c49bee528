; inherits: c

; throw std::logic_error("not implemented"); and friends.
((throw_statement (call_expression arguments: (argument_list . (string_literal) @_msg .))) @hole
 (#match? @_msg "(?i)todo|not (yet )?implemented|unimplemented"))

; Placeholders in Java: throw new UnsupportedOperationException("TODO" / "not implemented").

((throw_statement
   (object_creation_expression
     type: (type_identifier) @_type
     arguments: (argument_list . (string_literal) @_msg .))) @hole
 (#eq? @_type "UnsupportedOperationException")
 (#match? @_msg "(?i)todo|not (yet )?implemented|unimplemented"))

; Placeholders in JavaScript (TypeScript and TSX inherit these):
; `throw new Error("TODO")` / "not implemented".

((throw_statement
   (new_expression
     constructor: (identifier) @_ctor
     arguments: (arguments . (string) @_msg .))) @hole
 (#eq? @_ctor "Error")
 (#match? @_msg "(?i)todo|not (yet )?implemented|unimplemented"))

; Placeholder bodies in Python: `pass` or `...` as the whole body of a function or
; class, optionally after its docstring.

(function_definition
  body: (block . (expression_statement (string))? . [(pass_statement) (expression_statement (ellipsis))] @hole .))

(class_definition
  body: (block . (expression_statement (string))? . [(pass_statement) (expression_statement (ellipsis))] @hole .))

; Infill targets for Python. Captures: see docs/grammars.md (body, block, statement,
; expression, arguments, parameters, condition).

(function_definition body: (block) @body)
(class_definition body: (block) @body)

(if_statement consequence: (block) @block)
(elif_clause consequence: (block) @block)
(else_clause body: (block) @block)
(for_statement body: (block) @block)
(while_statement body: (block) @block)
(with_statement body: (block) @block)
(try_statement body: (block) @block)
(except_clause (block) @block)
(finally_clause (block) @block)

(if_statement condition: (_) @condition)
(elif_clause condition: (_) @condition)
(while_statement condition: (_) @condition)

(argument_list) @arguments
(parameters) @parameters

(module (_) @statement)
(block (_) @statement)

(return_statement (_) @expression)
(assignment right: (_) @expression)
(augmented_assignment right: (_) @expression)
(argument_list (_) @expression)
(keyword_argument value: (_) @expression)
(lambda body: (_) @expression)

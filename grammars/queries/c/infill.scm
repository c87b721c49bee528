; Infill targets for C; C++ inherits these patterns.

(function_definition body: (compound_statement) @body)

(if_statement consequence: (compound_statement) @block)
(else_clause (compound_statement) @block)
(for_statement body: (compound_statement) @block)
(while_statement body: (compound_statement) @block)
(do_statement body: (compound_statement) @block)

(argument_list) @arguments
(parameter_list) @parameters

(compound_statement (_) @statement)

(return_statement (_) @expression)
(init_declarator value: (_) @expression)
(assignment_expression right: (_) @expression)
(argument_list (_) @expression)

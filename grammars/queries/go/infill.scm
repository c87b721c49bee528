; Infill targets for Go.

(function_declaration body: (block) @body)
(method_declaration body: (block) @body)
(func_literal body: (block) @body)

(if_statement consequence: (block) @block)
(if_statement alternative: (block) @block)
(for_statement body: (block) @block)
(expression_case) @block
(default_case) @block

(if_statement condition: (_) @condition)
(for_clause condition: (_) @condition)

(argument_list) @arguments
(function_declaration parameters: (parameter_list) @parameters)
(method_declaration parameters: (parameter_list) @parameters)

(statement_list (_) @statement)

(return_statement (expression_list) @expression)
(short_var_declaration right: (expression_list) @expression)
(assignment_statement right: (expression_list) @expression)
(argument_list (_) @expression)

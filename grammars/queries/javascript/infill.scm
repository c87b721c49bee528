; Infill targets for JavaScript; TypeScript and TSX inherit these patterns.

(function_declaration body: (statement_block) @body)
(function_expression body: (statement_block) @body)
(generator_function_declaration body: (statement_block) @body)
(arrow_function body: (statement_block) @body)
(method_definition body: (statement_block) @body)
(class_declaration body: (class_body) @body)

(if_statement consequence: (statement_block) @block)
(else_clause (statement_block) @block)
(for_statement body: (statement_block) @block)
(for_in_statement body: (statement_block) @block)
(while_statement body: (statement_block) @block)
(do_statement body: (statement_block) @block)
(try_statement body: (statement_block) @block)
(catch_clause body: (statement_block) @block)
(finally_clause body: (statement_block) @block)

(if_statement condition: (parenthesized_expression (_) @condition))
(while_statement condition: (parenthesized_expression (_) @condition))
(for_statement condition: (_) @condition)

(arguments) @arguments
(formal_parameters) @parameters

(program (_) @statement)
(statement_block (_) @statement)

(return_statement (_) @expression)
(variable_declarator value: (_) @expression)
(assignment_expression right: (_) @expression)
(arguments (_) @expression)
(pair value: (_) @expression)

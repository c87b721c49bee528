; Infill targets for Rust.

(function_item body: (block) @body)
(closure_expression body: (block) @body)
(impl_item body: (declaration_list) @body)

(if_expression consequence: (block) @block)
(else_clause (block) @block)
(for_expression body: (block) @block)
(while_expression body: (block) @block)
(loop_expression body: (block) @block)
(match_expression body: (match_block) @block)

(if_expression condition: (_) @condition)
(while_expression condition: (_) @condition)

(arguments) @arguments
(parameters) @parameters

(block (_) @statement)

(let_declaration value: (_) @expression)
(return_expression (_) @expression)
(arguments (_) @expression)
(match_arm value: (_) @expression)
(closure_expression body: (_) @expression)

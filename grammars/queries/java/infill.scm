; Infill targets for Java.

(method_declaration body: (block) @body)
(constructor_declaration body: (constructor_body) @body)
(lambda_expression body: (block) @body)
(class_declaration body: (class_body) @body)

(if_statement consequence: (block) @block)
(if_statement alternative: (block) @block)
(for_statement body: (block) @block)
(enhanced_for_statement body: (block) @block)
(while_statement body: (block) @block)
(try_statement body: (block) @block)
(catch_clause body: (block) @block)

(if_statement condition: (parenthesized_expression (_) @condition))
(while_statement condition: (parenthesized_expression (_) @condition))
(for_statement condition: (_) @condition)

(argument_list) @arguments
(formal_parameters) @parameters

(block (_) @statement)
(constructor_body (_) @statement)

(return_statement (_) @expression)
(variable_declarator value: (_) @expression)
(assignment_expression right: (_) @expression)
(argument_list (_) @expression)

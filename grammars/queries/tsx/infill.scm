; inherits: typescript

(jsx_expression (_) @expression)

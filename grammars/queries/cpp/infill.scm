; inherits: c

(lambda_expression body: (compound_statement) @body)
(condition_clause value: (_) @condition)
(for_range_loop body: (compound_statement) @block)

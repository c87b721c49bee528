; Placeholders in C (C++ inherits): a function body holding only a TODO comment.

((function_definition body: (compound_statement . (comment) @hole .))
 (#match? @hole "(?i)todo|fill"))

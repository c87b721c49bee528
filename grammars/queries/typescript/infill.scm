; inherits: javascript

(method_signature) @statement
(interface_body (_) @statement)

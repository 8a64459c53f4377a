"""Lists: static membership lists and dynamic (rule-tree) segments."""

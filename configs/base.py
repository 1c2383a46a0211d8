"""The base config every experiment starts from (ml_collections). Not a run by itself.

Derived from the schema (rlp/schema.py), where every field's default, allowed values and help
live. Groups: model, data, rlp (also read by rpt), warmup, optim, train, mesh. Each experiment
file calls get_config() from here and overrides what it changes; runs change it with
--config.a.b=value, never by editing code. `rlp-train --config=FILE --print_config` lists every
field with its value and help.
"""

from rlp import schema


def get_config():
  return schema.config_dict()

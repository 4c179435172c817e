"""Records whose fields are plain attributes: faust's per-field descriptors taken off the class
where they do nothing, so that building a record costs what a dataclass costs."""
from __future__ import annotations

from typing import TypeVar

import faust
from faust.models.fields import FieldDescriptor

R = TypeVar("R", bound=type[faust.Record])


def plain_fields(cls: R) -> R:
    """faust puts a FieldDescriptor on the Record class for each field, and its `__set__` is a
    Python call per field per record (prepare_value, then tag) even when neither does anything:
    for the two records built per transaction event, that was most of their cost (figures:
    bench/results/issue14-plain-records.txt). Without coercion, tags, validation or lazy
    coercion the descriptor only stores the value in the instance's `__dict__`, so it is taken
    off the class and the value goes there directly. faust's own `__init__`, `asdict`, `dumps`
    and `loads` are unchanged: they keep the descriptors in `_options.descriptors`. The cost:
    `Record.field` on the class (a FieldDescriptor, e.g. for `group_by`) is gone for these.

    Refuses a Record whose descriptors would do any work: that one keeps faust's path."""
    options = cls._options
    if options.coerce or options.validation:
        raise TypeError(f"{cls.__name__}: plain_fields needs coerce=False and validation=False")
    for name, descriptor in options.descriptors.items():
        if not isinstance(descriptor, FieldDescriptor):
            raise TypeError(f"{cls.__name__}.{name}: {type(descriptor).__name__} is not faust's")
        if descriptor.coerce or descriptor.tag is not None or descriptor.lazy_coercion:
            raise TypeError(f"{cls.__name__}.{name}: its descriptor coerces or tags the value")
    for name in options.descriptors:
        if name in cls.__dict__:
            delattr(cls, name)
    return cls

"""The wire shape of compiled protos (field numbers, types, labels, message types, enum
values, service methods), for comparing ours with tritonclient's. Imported by the tests and
by ``triton_checks.py`` in the side environment (protobuf < 5 there), so it needs nothing
but the descriptors it is given."""

from __future__ import annotations


def _repeated(field) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf >= 5.28
        return bool(field.is_repeated)
    return field.label == field.LABEL_REPEATED


def describe(modules: list, service_module, service: str = "GRPCInferenceService") -> dict:
    """``{"messages": {full_name: {field: [number, type, repeated, message type]}},
    "enums": {full_name: {name: number}}, "methods": {name: [input, output]}}``."""
    messages: dict = {}
    enums: dict = {}

    def walk(message) -> None:
        messages[message.full_name] = {
            f.name: [
                f.number,
                f.type,
                _repeated(f),
                f.message_type.full_name if f.message_type else "",
            ]
            for f in message.fields
        }
        for enum in message.enum_types:
            enums[enum.full_name] = {v.name: v.number for v in enum.values}
        for nested in message.nested_types:
            walk(nested)

    for module in modules:
        for message in module.DESCRIPTOR.message_types_by_name.values():
            walk(message)
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            enums[enum.full_name] = {v.name: v.number for v in enum.values}
    methods = {
        m.name: [m.input_type.full_name, m.output_type.full_name]
        for m in service_module.DESCRIPTOR.services_by_name[service].methods
    }
    return {"messages": messages, "enums": enums, "methods": methods}

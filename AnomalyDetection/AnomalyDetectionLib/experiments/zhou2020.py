"""Placeholder: being written."""


def run(context):
    raise NotImplementedError

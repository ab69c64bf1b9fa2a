"""The one error type of the data layer."""


class DataError(ValueError):
  """A data file, record or batch request that cannot be honoured; the message names file, line or field."""

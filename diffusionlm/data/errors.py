"""The one exception type of the data layer: bad settings or inputs detected before training starts."""


class DataError(ValueError):
    """A data setting or input that cannot work; the message names the setting to fix."""

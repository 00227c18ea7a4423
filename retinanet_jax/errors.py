"""The errors that mean "the user's move": bad input (an argument, a file, a record, a config
value) or a run stopped by a fault it cannot go past (a full disk, non-finite steps, too many
bad records). Their message is one line that names the argument, file or record at fault and,
where there is one, the fix. A command prints such an error in that one line and exits 1
(commands/command.py); any other exception is a bug and keeps its traceback.

  UserError(ValueError)                   bad input; the base of the others
  MissingFile(UserError, FileNotFoundError)  a named file or folder that is not there
  AlreadyExists(UserError, FileExistsError)  a folder to write to that holds something else
Others of their kind live with what raises them: checkpoint.CheckpointWriteError and
UnreadableCheckpoint, data.bad_records.TooManyBadRecords, data.input_position.CorruptPosition,
training.hooks.NonFiniteStep.
"""


class UserError(ValueError):
    """Bad input, or a fault the user must fix: the message says which, in one line."""


class MissingFile(UserError, FileNotFoundError):
    """A file or folder the caller named does not exist (or lacks what makes it one)."""


class AlreadyExists(UserError, FileExistsError):
    """A folder to write to already holds something that must not be overwritten."""

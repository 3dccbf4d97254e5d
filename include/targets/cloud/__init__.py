"""What every cloud target does the same way, once, above the clouds.

* ``settings``: reading and validating ``FLIGHTS_<CLOUD>_*`` variables (``get``/``integer``/``boolean``);
* ``artifact``: the deterministic, content-addressed code artefact every cloud job runs;
* ``naming``: job names with the try number, and which tries a retry may reattach to;
* ``reattach``: the control flow of a cloud job operator: find the job of this attempt, reattach or
  submit, cancel stale jobs, check the final state and the outputs;
* ``spec``: operator specs as plain dicts (``OperatorSpec``) and ``instantiate``.

A cloud package under ``include/targets/`` supplies only the client calls (submit, find, poll,
cancel), where files live, its settings, its roles and its prices.
"""

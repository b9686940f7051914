"""What producers and workers agree on; imports neither side, and nothing heavy here.

* ``spec``     the job spec (pydantic), as producers validate it and workers re-check it
* ``payload``  the chunk payload on the wire: the task name, one typed message, encoded and decoded here
* ``names``    task and model-type names (enums), result statuses
* ``errors``   ``AssetqError``, the one base exception, and ``SpecError``
* ``keys``     every Redis key; ``store``, ``metrics``, ``fleet`` read and write them
* ``broker``   the Redis queue protocol (kombu's lists plus wake-up tokens) and the lease state
* ``catalog``  what a model directory holds, from its layout alone
* ``output``   the files ``assetq run`` and ``assetq results --out`` write
"""

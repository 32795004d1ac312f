"""The pipeline's stages, wired two ways: in one process (siem.daemon) or as roles over Kafka (siem.roles).

::

    collectors ──sink──► Intake ──────────────► EventLog ──────────► evaluation ──────────► AlertSink
    collectors.py        intake.py              stores.py            evaluator.py            siem.alert
    (siem.collect        queue, parse,          LocalEventLog |      LocalEvaluator |        alert log, dedup,
     INPUT_TYPES)        positions, watermark   KafkaEventLog        Routing + Correlation   route, deliver
                                                                     (routing.py)

* ``records.py``   what the logs hold: events and typed control records (Positions, Watermark, Match)
* ``watermark.py`` event time: SourceWatermark at intake, MergedWatermark where origins meet
* ``stores.py``    the EventLog and StateStore protocols and their local and Kafka implementations

A fix made in a stage holds in both wirings; tests/test_equivalence.py checks that replay, the embedded
daemon and Kafka mode give the same alert ids on the same input.
"""

"""The driver, split by what each part may touch.

- :mod:`codesign.driver.scheduler`: what to start, defer, repeat, retry or fail (pure: no
  Ray, no storage).
- :mod:`codesign.driver.executor`: where evaluations run (``RayExecutor``,
  ``InProcessExecutor``) behind one ``Executor`` protocol.
- :mod:`codesign.driver.ray_connect`: starting or joining a Ray cluster.

:mod:`codesign.runner` is the session that joins them to the study (the only writer).
"""

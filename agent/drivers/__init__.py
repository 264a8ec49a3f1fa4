"""Device drivers, one module per protocol; the agent picks one by the device's `driver` key."""

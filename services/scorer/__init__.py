"""The scorer: recognition (CRA) and realization (VR, VI) of cultural references.

The domain lives in plain modules (`references`, `crops`, `recognition`, `realization`,
`aggregation`, `encoders`, `scoring`); `servicer` and `__main__` adapt it to gRPC.
"""

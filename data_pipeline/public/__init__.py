"""Source types for public dataset layouts (LLaVA, SeeClick, ScreenSpot, Mind2Web, SSv2,
EPIC-KITCHENS, Ego4D); the layouts themselves are parsed by `magma.layouts`. The robot
layouts (LeRobot, RLDS) live with the other episode readers in `data_pipeline/robot/`."""

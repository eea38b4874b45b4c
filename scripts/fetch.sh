#!/usr/bin/env bash
# Placeholder until the image cache lands: nothing to fetch yet.
exit 0
